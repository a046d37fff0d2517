"""`python -m benchmarks.soak --minutes M --seed S [--nodes N]`."""

from benchmarks.soak.runner import main

raise SystemExit(main())
