# Hydra's built-in config groups for ttexp, shipped in the wheel as the package ttexp.conf.
