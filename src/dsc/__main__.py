from dsc.cli.root import main

main()
