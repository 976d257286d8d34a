import sys
import time

mb, sleep_s = int(sys.argv[1]), float(sys.argv[2])
block = bytearray(mb * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
print(f"holding {mb} MB for {sleep_s} s", flush=True)
time.sleep(sleep_s)
print("done", flush=True)
