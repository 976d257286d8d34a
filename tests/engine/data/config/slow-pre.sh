#!/bin/sh
echo "start $1 $(date +%s%N)" >> pre.log
sleep 0.3
echo "end $1 $(date +%s%N)" >> pre.log
