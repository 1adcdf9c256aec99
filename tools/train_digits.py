"""Train the digits demo convnet from scratch (CPU, about a minute) and write its weights.

    python tools/train_digits.py    # -> src/convlens/models/zoo/data/digits_convnet.pt

The last 360 digits are held out (the demo scans them); the rest train, with 1-pixel shifts.
"""

from __future__ import annotations

import torch

from convlens.models.zoo.digits import DIGITS_WEIGHTS as WEIGHTS
from convlens.models.zoo.digits import digits_network
from convlens.scan.demo import VALIDATION, digits_pixels


def main() -> None:
    torch.manual_seed(0)
    pixels, labels = digits_pixels()
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0
    y = torch.from_numpy(labels)
    train_x, train_y = x[:-VALIDATION], y[:-VALIDATION]
    test_x, test_y = x[-VALIDATION:], y[-VALIDATION:]
    net = digits_network()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    for epoch in range(12):
        net.train()
        order = torch.randperm(len(train_x))
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            shift = [int(s) for s in torch.randint(-2, 3, (2,))]
            inputs = torch.roll(train_x[batch], shifts=shift, dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(net(inputs), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            accuracy = (net(test_x).argmax(1) == test_y).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, held-out accuracy {accuracy:.1%}")
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), WEIGHTS)
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size / 1000:.0f} kB)")


if __name__ == "__main__":
    main()
