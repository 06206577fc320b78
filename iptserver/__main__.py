from iptserver.cli import main

raise SystemExit(main())
