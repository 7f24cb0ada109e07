"""What the finetune stage (`vlx.stages.finetune`) is made of: training items and their collator (`items`), the
Trainer's arguments (`arguments`), the Trainer with vlx's log entries (`trainer`) and the step profiler
(`profiling`)."""
