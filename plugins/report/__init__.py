"""The run report: data gathered from memory and events, an inline SVG loss chart, one HTML file."""
