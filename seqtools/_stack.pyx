# placeholder kernel module, replaced by the stacking work (issue 4)
