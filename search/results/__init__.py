"""What comes after the search: a trial trained in full, evaluated, used, reported.

- `promote`: a trial of the store trained in full into its run folder
- `evaluate`: a trained model's test accuracy (`evaluate_run`) and labels for new
  images (`predict_file`)
- `export`: a run's network as a TorchScript, ONNX or safetensors file, checked
- `ensemble`: several runs' mean prediction, and teachers for distillation
- `report`: a study's leaderboard (report.md) beside its Pareto plot
- `pareto`: the accuracy-against-size plot and its Pareto front
- `plots`: a run's learning curves and confusion matrix
- `progress`: the per-epoch progress bar of a long training run

The run folder's files are named, written and read by `trainers.rundir`; trial
attributes are read and written through `search.record`.
"""
