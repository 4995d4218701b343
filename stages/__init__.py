"""One thin module per DVC stage: parse argv, load params, call the library, write outs."""
