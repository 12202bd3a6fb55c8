"""The PyTorch teacher of the train stage: torch only, never TensorFlow, student/ or compression/.

models.py the network and its ONNX export, fit.py the training loop, outputs.py data/train and
metrics/train.json, report.py plots/train, reports/train and the MLflow run.
"""
