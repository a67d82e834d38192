"""glioseg: reproducible glioma MRI segmentation research, one Snakemake DAG from archive to report."""

__version__ = "0.1.0"
