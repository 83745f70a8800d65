"""L5 experiments: the catalogue of presets (data only), the assignment's experiments
(assignment) and the bonus ones (bonus), and sweeps over many configurations on local
processes or a Dask cluster (sweep). Never imports report."""
