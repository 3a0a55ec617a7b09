"""What every subpackage shares: file writing, image files and pixels, the progress bar.

Nothing here imports TensorFlow, so the data check and the command line stay quick to start.
"""
