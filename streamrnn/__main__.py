from streamrnn.cli import main

main()
