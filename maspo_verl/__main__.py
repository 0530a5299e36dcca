from maspo_verl.cli import main

raise SystemExit(main())
