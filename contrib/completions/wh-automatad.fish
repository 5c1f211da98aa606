complete -c wh-automatad -l log-format -d 'Log format on stderr (default: text, without timestamps under journald)' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c wh-automatad -l check -d 'Validate the settings and every included file, print every problem, and exit 0 or 1'
complete -c wh-automatad -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wh-automatad -s V -l version -d 'Print version'
