"""synth: tool-use traces for SFT.

- `synth.generate`  Claude writes traces, as Message Batches or one by one (`python -m synth.generate`)
- `synth.batches`   the Message Batches path of a generation run (book, submit, poll, record)
- `synth.claude`    the Anthropic side: requests, batches, prices, the USD budget
- `synth.ledger`    what was booked, sent, billed and decided, durable across kills
- `synth.offline`   templated problems answered by the real tools, no key needed
- `synth.traps`     trap templates (training and held-out families) for PRIME's role sections
- `synth.arith_phrasings` arithmetic in many phrasings (the pretrained demo), disjoint from the held-out shapes
- `synth.gsm8k`     GSM8K -> calculator traces, with every <<expr=value>> recomputed
- `synth.validation`    the checks every trace goes through, whoever wrote it
- `synth.aio`       run the async code from a script or from a notebook's running event loop
"""
