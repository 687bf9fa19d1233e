"""EpochPhases: an epoch's time split into batches waited for and steps, as nnU-Net's loop calls the hooks."""
import time

from nnunet_lean.measure.phases import PHASES, EpochPhases, read_phases


class Stock:
    """nnU-Net's hooks, in the order its run_training calls them; each step sleeps STEP s."""
    STEP = 0.0

    def __init__(self):
        self.lines = []
        self.current_epoch = 0

    def print_to_log_file(self, *args):
        self.lines.append(f"2026-11-30 12:00:00.000000: {' '.join(map(str, args))} ")

    def on_train_epoch_start(self):
        pass

    def on_validation_epoch_start(self):
        pass

    def train_step(self, batch):
        time.sleep(self.STEP)
        return {"loss": batch}

    validation_step = train_step

    def on_epoch_end(self):
        self.lines.append("2026-11-30 12:00:00.000000: Epoch time: 1.0 s ")


class Trainer(EpochPhases, Stock):
    pass


def run_epoch(trainer, data_s: float, iters: int = 3, val_iters: int = 2):
    def batches(n):
        for i in range(n):
            time.sleep(data_s)   # the data loader's next()
            yield i
    trainer.on_train_epoch_start()
    outs = [trainer.train_step(b) for b in batches(iters)]
    time.sleep(0.1)   # on_train_epoch_end's work: neither phase
    trainer.on_validation_epoch_start()
    outs += [trainer.validation_step(b) for b in batches(val_iters)]
    trainer.on_epoch_end()
    trainer.current_epoch += 1
    return outs


def test_waiting_for_batches_and_steps_are_counted_apart_per_epoch():
    slow_data = Trainer()
    assert run_epoch(slow_data, data_s=0.05) == [{"loss": i} for i in (0, 1, 2, 0, 1)]   # steps' outputs pass
    slow_steps = Trainer()
    slow_steps.STEP = 0.05
    run_epoch(slow_steps, data_s=0.0)
    run_epoch(slow_steps, data_s=0.0, iters=1, val_iters=1)   # counters restart each epoch
    (a,), (b, c) = read_phases("\n".join(slow_data.lines)), read_phases("\n".join(slow_steps.lines))
    assert list(a) == ["epoch", *PHASES] and (a["epoch"], b["epoch"], c["epoch"]) == (0, 0, 1)
    assert a["train data"] >= 0.15 and a["val data"] >= 0.1 and a["train steps"] < a["train data"]
    assert b["train steps"] >= 0.15 and b["val steps"] >= 0.1 and b["train data"] < b["train steps"]
    assert b["val data"] < 0.05   # the time between training and validation is not counted as waiting
    assert 0.05 <= c["train steps"] < b["train steps"]
    # the phases line comes before nnU-Net's own epoch lines
    assert slow_data.lines[0].split(": ", 1)[1].startswith("epoch phases") and "Epoch time" in slow_data.lines[1]
