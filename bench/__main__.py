"""``python -m bench``: the headline benchmark (W1 at N=10,100,300); see bench/README.md."""

from bench.w1 import main

if __name__ == "__main__":
    raise SystemExit(main())
