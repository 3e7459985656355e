from robench.cli.commands import main

main()
