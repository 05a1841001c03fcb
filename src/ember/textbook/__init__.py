"""The textbook inside: every formula Ember trains with, as small readable NumPy code.

One short module per topic, NumPy only (no torch import anywhere in this package but
inside `cli.run`), each function with its formula in the docstring and the array shapes in
comments. Each is tested against PyTorch's autograd (tests/textbook), so a reader can trust
that the formula on the page is the computation Ember's fast modules perform. The map from
concept to reference, fast module, recipe and test is docs/textbook.md.

    dense        y = x Wᵀ + b and its backward pass
    activations  sigmoid, tanh, ReLU, softmax and their derivatives
    losses       mean squared error and cross-entropy with their gradients
    optim        gradient descent, SGD with momentum, Adam/AdamW (torch.optim's conventions)
    conv         conv2d forward and backward by im2col
    pooling      max and average pooling forward and backward
    lstm         one LSTM step (nn.LSTM's gate order i, f, g, o)
    attention    softmax(QKᵀ/√d)V forward and backward
    positional   sinusoidal positional encoding
    xor          the first chapter's 2-4-1 tanh network, trained by hand on XOR
"""
