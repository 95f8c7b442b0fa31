"""The pure core: no Beam, TensorFlow or torch, no environment variables, no file locks. Text
cleaning and splitting, LTP segmentation of a given model directory, WordPiece with word ids,
instance building and masking (Google's algorithm and the vectorized one), seeds."""
