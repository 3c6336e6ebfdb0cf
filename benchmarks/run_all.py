""" All benchmarks in one run, as the table in README: `python -m benchmarks.run_all` """
from benchmarks import convmixer, inference, sep_resnet18, sep_resnet20
from benchmarks._harness import machine, table

if __name__ == '__main__':
    print(f'Median step time after warm-up and peak resident memory per model, each in a fresh process; {machine()}')
    rows = []
    for bench in (sep_resnet20, sep_resnet18, convmixer, inference):
        rows += bench.run()
        print(f'... {bench.__name__} done', flush=True)
    print(table(rows))
