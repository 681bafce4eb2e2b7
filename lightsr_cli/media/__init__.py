"""Read and write media as numpy arrays: images (images.py) and videos (video); no torch."""
