"""The command line on top of everything: `evomerge ...` (`cli`) and the environment check (`doctor`)."""
