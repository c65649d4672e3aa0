from training.text.cli import main

raise SystemExit(main())
