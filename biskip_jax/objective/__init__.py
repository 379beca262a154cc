"""The training objective: the losses of eq. 3-7 and 12-13, self-paced learning (eq. 8-11)
and the schemes of Table 1 that switch them."""
