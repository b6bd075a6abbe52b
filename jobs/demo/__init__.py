"""`lineup demo`: the whole chain on LFW, the 2018 test replayed."""
