# expect: RT303
# The sync Anthropic client, no timeout.
import anthropic

client = anthropic.Anthropic()
