"""labcore's benchmarks: `python -m bench` (or `./lab bench`); see bench/__main__.py."""
