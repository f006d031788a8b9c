//! `ironpop --demo [DIR]`: a self-contained demo as the current user — config, passwd file, sample mailbox — then serve in the foreground.
