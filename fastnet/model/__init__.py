"""L2 the model: the network over ops handed in (network), optimisers and learning-rate
schedules (optim), finite-difference gradient checks (gradcheck), model files (files) and
batch-norm statistics (bn_stats: PreciseBN). Never imports backends, data, training or runs."""
