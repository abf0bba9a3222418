"""One module per task: what it builds and in which order. The loop itself is ttexp.train.loop."""
