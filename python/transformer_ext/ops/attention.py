"""(stub: being written)"""
def attention(*a, **k):
    raise NotImplementedError('attention')

def attention_backward(*a, **k):
    raise NotImplementedError('attention_backward')

