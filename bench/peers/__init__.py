"""The peer side of bench/bench_peers.py: code that also runs in the autofaiss virtualenv (numpy, FAISS
and the standard library only; nothing of Lineup's)."""
