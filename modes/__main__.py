from modes.main import main

main()
