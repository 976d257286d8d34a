#!/bin/sh
echo "written by the PRE script" > from-pre.txt
