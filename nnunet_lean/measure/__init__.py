"""Measuring networks: ``networks`` times a training step, its peak tensor memory, FLOPs and a
sliding-window prediction of several networks in one process; ``report`` is the ``nnunet_lean report``
command built on it (default network vs lean / scaled / pruned on a dataset's plans); ``dice_time`` draws
validation Dice against training time; ``phases`` splits a training epoch's time (batches waited for, steps)."""
