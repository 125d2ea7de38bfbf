"""`python -m serving` = `tts-serve`."""

from serving.cli import main

main()
