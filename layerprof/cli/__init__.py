"""The command line: `options` types every option, `commands` maps a command to one library function, `render`
prints what it returns."""
