"""GPU kernels (Triton) of the BiGain operators; :mod:`.launch` is their Python face.

Imported lazily: ``import bigain_export`` works without Triton, and the reference ops serve.
"""
