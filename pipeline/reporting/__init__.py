"""Reports, tables and figures, the verdict and the paper's published numbers."""
