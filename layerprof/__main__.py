"""`python -m layerprof` runs the command line, where no `layerprof` script is on the PATH."""

from layerprof.cli.commands import main

main()
