"""The demo: the whole product on synthetic pictures (or a folder of photos) in one command.

It sits on top of every other package: it uses the SDK and starts the services, and adds `imgsearch demo`
to the command line through the `imgsearch.commands` entry point.
"""
