# placeholder, replaced by the ring buffer wrapper (issue 3)
