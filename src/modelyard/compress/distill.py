"""Knowledge distillation: a smaller student trained on the teacher's soft targets through the normal trainer."""
