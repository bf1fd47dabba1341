"""`python -m aftpipe ...`, and so `torchrun --nproc_per_node N -m aftpipe extract|train ...`."""

from aftpipe.cli import main

main()
