"""synth: tool-use traces for SFT.

- `synth.generate`  Claude writes traces through forced tool use (`python -m synth.generate`)
- `synth.offline`   templated problems answered by the real tools, no key needed
- `synth.gsm8k`     GSM8K -> calculator traces, with every <<expr=value>> recomputed
- `synth.verify`    the checks every trace goes through, whoever wrote it
"""
