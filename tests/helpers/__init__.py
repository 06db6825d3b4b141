"""What several test modules share: data paths, tiny rasters and cubes, reference
implementations, fakes. Tests import from here, never from another test module."""
