"""Deployment: export trained folds to ONNX (:mod:`.export`) and predict inside nnU-Net's own
nnUNetPredictor with only the network replaced by a CPU backend (:mod:`.predict`, :mod:`.adapter`)."""
