from hostcreator.cli import main

main()
