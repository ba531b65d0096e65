from authops.cli import main

main()
