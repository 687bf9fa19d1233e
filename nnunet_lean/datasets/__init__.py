"""Small synthetic datasets in nnU-Net's raw format, made on the spot (no download)."""
