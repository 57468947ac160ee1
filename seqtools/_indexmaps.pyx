# placeholder kernel module for batch/unbatch/split/interleave/cycle index maps
