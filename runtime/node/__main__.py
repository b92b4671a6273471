from freight.node.server import main

main()
